"""HQ image sources and the training-sample dataset (CPU side of the BasicSR-style split).

Sources return whole HQ images as float tensors (3, H, W) in [0, 1]. `SRSamples` turns a source into training
samples: a random crop (padded by reflection when the image is smaller), a random flip, and the per-image
degradation parameters drawn by the degradation's `sample(rng)`. Every random draw comes from
`numpy.random.default_rng([seed, epoch, index])`, so a sample does not depend on batch size, order or workers.

Broken images (empty, truncated, not an image, or smaller than `min_size`) are replaced by the next usable one;
each sample says which image it was cut from (`image_index`), so the main process can count and report the broken
ones (`BrokenImages`) whatever the number of loader workers: no state is shared with the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from d3sr.errors import ConfigError, D3SRError
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
            _check_one_readable(found[:limit], source)
            self.paths.extend(found[:limit])
        self.names = [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:
        """The image, or None when the file cannot be decoded (counted and reported by the data module)."""
        try:
            return read_image(self.paths[index])
        except UNREADABLE:
            return None

    def name(self, index: int) -> str:
        """How reports name image `index`: its path."""
        return str(self.paths[index])

    def problem(self, index: int) -> str | None:
        """Why image `index` cannot be decoded (e.g. 'empty file'), or None if it can."""
        return unreadable_reason(self.paths[index])


def unreadable_reason(path: Path) -> str | None:
    """Why an image file cannot be decoded, in a few words, or None if it can."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        read_image(path)
    except UNREADABLE as error:
        return f"{type(error).__name__}: {error}"
    return None


def _check_one_readable(paths: list[Path], source: Path) -> None:
    """D3SRError naming `source` when none of its images can be decoded (stops at the first one that can)."""
    problems = []
    for path in paths:
        problem = unreadable_reason(path)
        if problem is None:
            return
        problems.append(f"{path.name} ({problem})")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    raise D3SRError(f"data: no usable image in {source}: none of its {len(paths)} image files can be read ({shown})")


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
    """Training/validation samples {'gt': (3, S, S) in [0, 1], 'index', 'image_index', **degradation params}.

    crops_per_image repeats each source image (useful for a handful of large photos); `center=True` takes central
    crops (first copy) and seeded random ones after. A broken image (the source returns None, or its shorter side is
    below `min_size`) is replaced by the next usable one; `image_index` is the source image the crop was cut from.
    Images smaller than the crop but not below `min_size` are padded (BasicSR's choice; `min_size=None` pads any).
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
        min_size: int | None = None,
    ) -> None:
        if crop_size <= 0 or crop_size % 8:
            raise ValueError(f"data.crop_size must be a positive multiple of 8, got {crop_size}")
        if crops_per_image < 1:
            raise ValueError(f"data.crops_per_image must be >= 1, got {crops_per_image}")
        if min_size is not None and min_size < 1:
            raise ConfigError(f"data.min_image_size must be >= 1 or null, got {min_size}")
        self.source, self.crop_size, self.flip = source, crop_size, flip
        self.crops_per_image, self.seed, self.center = crops_per_image, seed, center
        self.sample_degradation = sample_degradation
        self.min_size = min_size
        self.epoch = 0
        self._broken: set[int] = set()  # this process's known broken images (each worker has its own copy)

    def __len__(self) -> int:
        return len(self.source) * self.crops_per_image

    def rng(self, index: int) -> np.random.Generator:
        """The generator every random draw of sample `index` in the current epoch comes from."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def _usable(self, image: torch.Tensor | None) -> bool:
        return image is not None and (self.min_size is None or min(image.shape[-2:]) >= self.min_size)

    def problem(self, image_index: int) -> str | None:
        """Why source image `image_index` is not used (unreadable, or its size), or None if it is usable."""
        reason = getattr(self.source, "problem", lambda _: None)(image_index)
        if reason is None:
            image = self.source[image_index]
            if image is None:
                return "unreadable"
            if not self._usable(image):
                return f"{image.shape[-2]}×{image.shape[-1]}, smaller than data.min_image_size={self.min_size}"
        return reason

    def first_usable(self) -> int:
        """The index of the first usable source image; D3SRError if there is none (checked at start-up)."""
        for image_index in range(len(self.source)):
            if self._usable(self.source[image_index]):
                return image_index
        problem = self.problem(0) if len(self.source) else "no images"
        raise D3SRError(f"data: none of the {len(self.source)} training images is usable (the first: {problem})")

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        image, source_index = None, index // self.crops_per_image
        for offset in range(len(self.source)):
            image_index = (source_index + offset) % len(self.source)
            if image_index in self._broken:
                continue
            image = self.source[image_index]
            if self._usable(image):
                break
            self._broken.add(image_index)
            image = None
        if image is None:
            raise D3SRError("data: no usable image in the data set")
        central = self.center and index % self.crops_per_image == 0
        gt = random_crop(image, self.crop_size, None if central else rng)
        if self.flip and rng.random() < 0.5:
            gt = gt.flip(-1)
        sample = {"gt": gt.contiguous(), "index": index, "image_index": image_index}
        if self.sample_degradation is not None:
            sample.update(self.sample_degradation(rng))
        return sample


class BrokenImages:
    """Counts and reports the broken training images, in the main process, from the batches' indices.

    A sample asked for image `index // crops_per_image` and says which one it was cut from (`image_index`): the images
    in between were skipped as broken. Each epoch's are listed in one warning (`report`); the run stops with a
    D3SRError once more than `max_fraction` of all training images have been found broken.
    """

    MAX_LISTED = 20  # paths named in one warning

    def __init__(self, samples: SRSamples, max_fraction: float = 0.1) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ConfigError(f"data.max_broken_fraction must be in [0, 1], got {max_fraction}")
        self.samples, self.max_fraction = samples, max_fraction
        self.found: dict[int, str] = {}  # every broken image so far -> why
        self.this_epoch: set[int] = set()

    def add(self, index: torch.Tensor, image_index: torch.Tensor) -> None:
        """Record the images skipped for a batch's samples (`index`, `image_index`: (B,) integer tensors)."""
        size, crops = len(self.samples.source), self.samples.crops_per_image
        for wanted, used in zip((index // crops).tolist(), image_index.tolist()):
            for skipped in range(wanted, wanted + (used - wanted) % size):
                self._found(skipped % size)

    def _found(self, image_index: int) -> None:
        self.this_epoch.add(image_index)
        if image_index in self.found:
            return
        self.found[image_index] = self.samples.problem(image_index) or "unreadable"
        size = len(self.samples.source)
        if len(self.found) > self.max_fraction * size:
            raise D3SRError(
                f"data: {len(self.found)} of the {size} training images are broken "
                f"({len(self.found) / size:.1%}, more than data.max_broken_fraction={self.max_fraction}): "
                f"{self._listing(sorted(self.found))}. Fix or remove them, or raise data.max_broken_fraction"
            )

    def _listing(self, indices: list[int]) -> str:
        name = getattr(self.samples.source, "name", lambda i: f"#{i}")
        shown = [f"{name(i)} ({self.found[i]})" for i in indices[: self.MAX_LISTED]]
        more = len(indices) - self.MAX_LISTED
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

    def report(self, epoch: int) -> None:
        """One warning listing the broken images met in `epoch` (none: nothing), then start counting the next."""
        if self.this_epoch:
            log.warning("Epoch %d skipped %d broken training image(s) of %d (stops above %.0f%%): %s", epoch,
                        len(self.this_epoch), len(self.samples.source), 100 * self.max_fraction,
                        self._listing(sorted(self.this_epoch)))  # fmt: skip
        self.this_epoch = set()
