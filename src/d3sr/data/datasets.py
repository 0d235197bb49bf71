"""HQ image sources and the training-sample dataset (CPU side of the BasicSR-style split).

Sources return whole HQ images as float tensors (3, H, W) in [0, 1]. `SRSamples` turns a source into training
samples: a random crop (padded by reflection when the image is smaller), a random flip, and the per-image
degradation parameters drawn by the degradation's `sample(rng)`. Every random draw comes from
`numpy.random.default_rng([seed, epoch, index])`, so a sample does not depend on batch size, order or workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Colour photos that ship inside scikit-image (no download): the embedded data set.
EMBEDDED_TRAIN = ("astronaut", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
                  "immunohistochemistry", "retina")  # fmt: skip
EMBEDDED_VAL = ("chelsea", "colorwheel")


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a PIL image or an array (gray → RGB, alpha dropped, 16-bit scaled)."""
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    scale = 65535.0 if array.dtype == np.uint16 else 255.0 if array.dtype == np.uint8 else 1.0
    array = array.astype(np.float32) / scale
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).clamp_(0, 1)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] from a PIL image: gray → RGB, 16-bit scaled, alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return to_tensor(np.asarray(image).astype(np.uint16))
    return to_tensor(image.convert("RGB"))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) uint8 (rounded), the inverse of to_tensor for 8-bit images."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to (3, H, W) in [0, 1], honouring EXIF orientation. Raises OSError if unreadable."""
    with Image.open(path) as image:
        return pil_to_tensor(ImageOps.exif_transpose(image))


class ImageFiles(Dataset):
    """HQ images from folders (searched recursively) and/or text files listing paths, e.g. LSDIR + FFHQ[:10000].

    roots: folders; lists: text files with one path per line (relative paths are relative to the list file);
    limits: per-source maximum number of images (sorted order), `null` for all.
    """

    def __init__(
        self,
        roots: Sequence[str] = (),
        lists: Sequence[str] = (),
        limits: Sequence[int | None] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        sources = [("root", Path(r).expanduser()) for r in roots] + [("list", Path(p).expanduser()) for p in lists]
        if not sources:
            raise ValueError("data: ImageFiles needs at least one folder in `roots` or file list in `lists`")
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
        except (OSError, ValueError, SyntaxError) as error:
            if path not in self._reported:
                self._reported.add(path)
                log.warning("Skipping unreadable image %s (%s)", path, error)
            return None


def embedded_photo(name: str) -> torch.Tensor:
    """A colour photo shipped inside scikit-image, as (3, H, W) in [0, 1]."""
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return to_tensor(left if name == "motorcycle_left" else right)
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"data: {name!r} is not an image in skimage.data")
    return to_tensor(loader())


class EmbeddedPhotos(Dataset):
    """The photos shipped in scikit-image (astronaut, coffee, rocket, ...): training with no data set on disk."""

    def __init__(self, names: Sequence[str] = EMBEDDED_TRAIN) -> None:
        if not names:
            raise ValueError("data: EmbeddedPhotos needs at least one name")
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
