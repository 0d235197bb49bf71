"""Helpers of the evaluation tests: random LPIPS/DISTS weight files and SR/HR image pairs from scikit-image photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from skimage import data

from d3sr.evaluation.weights import WEIGHT_FILES

PHOTOS = ("astronaut", "coffee", "chelsea")


def random_backbone_state(builder, seed: int) -> dict[str, torch.Tensor]:
    """State dict of a torchvision model with random `features.*` and zero-stride (tiny on disk) classifier tensors.

    The classifier is never used by LPIPS/DISTS but torchvision loads the whole state dict strictly.
    """
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in builder().state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features.") and key.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.startswith("features."):
            state[key] = torch.zeros(shape)
        else:
            state[key] = torch.zeros(()).expand(shape)
    return state


def write_random_weights(torch_home: Path) -> None:
    """Random LPIPS (AlexNet) and DISTS (VGG16) weight files with the exact names and folders pyiqa reads."""
    import os

    from pyiqa.archs.dists_arch import DISTS
    from pyiqa.archs.lpips_arch import LPIPS

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        alexnet_file, lpips_file = WEIGHT_FILES["lpips"]
        vgg_file, dists_file = WEIGHT_FILES["dists"]
        for file in (alexnet_file, lpips_file, vgg_file, dists_file):
            file.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_backbone_state(torchvision.models.alexnet, 0), alexnet_file.path)
        torch.save(random_backbone_state(torchvision.models.vgg16, 1), vgg_file.path)
        # pyiqa's own files: the archs built without them (pretrained=False, backbones read from the files above).
        torch.manual_seed(2)
        lpips = LPIPS(pretrained=False)
        # LPIPS weights its per-channel distances with non-negative linear heads.
        torch.save({k: v.abs() for k, v in lpips.state_dict().items() if k.startswith("lin")}, lpips_file.path)
        dists = DISTS(pretrained=False)
        torch.save({"alpha": dists.alpha.data.clone(), "beta": dists.beta.data.clone()}, dists_file.path)
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def photo(name: str, height: int = 64, width: int = 80) -> np.ndarray:
    """A (height, width, 3) uint8 crop of a scikit-image photo."""
    return getattr(data, name)()[:height, :width, :3]


def degrade(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """`image` with Gaussian noise of `sigma` (8-bit levels), rounded back to uint8."""
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def write_pairs(root: Path, sigma: float = 8.0, names=PHOTOS, size=(64, 80)) -> tuple[Path, Path]:
    """root/hr and root/sr with one PNG per photo; SR = HR + noise (identical when sigma=0)."""
    hr_dir, sr_dir = root / "hr", root / "sr"
    hr_dir.mkdir(parents=True, exist_ok=True)
    sr_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        hr = photo(name, *size)
        Image.fromarray(hr).save(hr_dir / f"{name}.png")
        Image.fromarray(degrade(hr, sigma, i) if sigma else hr).save(sr_dir / f"{name}.png")
    return sr_dir, hr_dir
